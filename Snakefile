# img2kernel: learn image kernels from (input, output) image pairs.
# Stages: urls -> download -> inputs store -> targets[filter] -> train[filter]
#         -> evaluate[filter] -> tables and results/report.html (see README.md);
#         a `pairs` filter brings its own: pairs_store[filter] -> train[filter] -> ...
from snakemake.utils import min_version

min_version("8.20")


configfile: "config/config.yaml"


include: "workflow/rules/common.smk"


# Both config files are checked before any job is scheduled: a bad value stops here,
# naming file, entry and field, and nothing under results/ is touched.
FILTERS = validated_filters()


include: "workflow/rules/data.smk"
include: "workflow/rules/targets.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
