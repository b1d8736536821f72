"""Research-only code, not part of the runtime pipeline: online baselines (TTA, fine-tuners), corruptions,
data-set readers (Fashion-MNIST, ImageNet folders) and the small source models used by the benchmarks."""
