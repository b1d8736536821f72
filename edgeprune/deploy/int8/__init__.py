"""INT8 deployment on the CPU: ONNX Runtime static QDQ quantisation calibrated on the field images.

``config`` (settings and defaults), ``quantize`` (calibration reader, pre-processing, one quantisation), ``bias``
(the biases corrected for the weights' rounding), ``gate`` (the quantised graph
against the fp32 graph on held-out images), ``rule`` (which nodes stay in float, measured) and
``build`` (the three together: what ``adapt --deploy-precision int8`` and ``export --int8`` run).
"""
