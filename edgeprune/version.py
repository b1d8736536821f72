"""The package version, in a module of its own so that any module can read it without importing the
package facade (``edgeprune/__init__.py`` imports the pipeline lazily: that would be a cycle)."""

__version__ = "0.1.0"
