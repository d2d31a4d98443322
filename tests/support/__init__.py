"""What several test modules share: a fake engine, a NumPy reference of the model, a
misbehaving HTTP file server, app helpers, and pictures drawn independently of the shapes
generator. Found through pytest's ``pythonpath`` setting (``tests/``): ``import support``."""
