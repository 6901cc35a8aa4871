"""The application: the ``molt`` command line and its verbs (train, eval, predict, extract, analyze, ablate,
params, bench, demo).

Everything here may import the library (``molt.model``, ``molt.methods``, ``molt.tasks``, ...); nothing in the
library imports this package. Lightning is imported only by :mod:`molt.app.train`, and only the application sets
logging and warning filters.
"""
