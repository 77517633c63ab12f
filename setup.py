"""Build script for the optional C accelerator; everything else is in pyproject.toml.

``tube.websocket.core._speedups`` is built by a plain ``pip install .`` (or ``-e .``) when a C
compiler and the Python headers are there. It is optional: when the build fails, setuptools
logs the error and the install goes on without it, and the pure-Python code is used
(``tube.websocket.core.masking.IMPLEMENTATION`` says which). In a checkout,
``python setup.py build_ext --inplace`` builds it beside its source.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "tube.websocket.core._speedups",
            sources=["tube/websocket/core/_speedups.c"],
            optional=True,
        )
    ]
)
