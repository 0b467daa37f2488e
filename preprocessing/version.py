"""The project's version, written once: setup.py reads this file as text (installing must not import
the package and its dependencies), ``copymove --version`` prints it, and every export records it in
its metadata.json. It lives in ``preprocessing``, the layer every other one may import."""
__version__ = "0.3.0.dev0"
