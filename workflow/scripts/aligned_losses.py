from tokensafe.runtime.job import start_job

start_job(snakemake.log[0])  # first: may hand this job to the job server (docs/architecture.md, "How a job runs")

from tokensafe.train.loss_dumps import dump_losses

p = snakemake.params
# The frozen aligned model's per-token NLL: -log pi_ref, computed once per fine-tuning set.
dump_losses(
    aligned=p.aligned, adapter=None, data_path=snakemake.input.data, settings=p.settings, out=snakemake.output[0]
)
