"""nf_jax: normalizer-free networks in JAX/Haiku, and loss-to-loss scaling laws."""
import setuptools

setuptools.setup(
    name="nf_jax",
    version="0.1.0",
    description=("Normalizer-free ResNets, NF-RegNets and NFNets in JAX/Haiku, "
                 "signal propagation plots, and loss-to-loss scaling laws."),
    packages=setuptools.find_packages(include=["nf_jax", "nf_jax.*", "launch",
                                               "launch.*", "experiments"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.10",
        "dm-haiku>=0.0.13",
        "optax>=0.2.4",
        "chex>=0.1.87",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "tensorflow-datasets>=4.9.7",
        "array-record>=0.5",
        "grain>=0.2.10",
        "orbax-checkpoint>=0.11",
        "numpy>=1.26",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "tensorboardX>=2.6",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5"],
        "bench": ["torch", "timm"],
    },
)
