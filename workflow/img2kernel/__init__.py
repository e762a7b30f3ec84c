"""img2kernel: learn image kernels from (input, output) image pairs.

The package holds the real code of the Snakemake pipeline in this repository:
the sharded array store, the filter registry, the learnable-kernel model and its
trainer, the least-squares oracle, evaluation and the HTML report.
"""

__version__ = "0.1.0"
