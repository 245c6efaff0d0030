from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.methods.pact.safety_tokens import write_safe_responses

p = snakemake.params
write_safe_responses(
    aligned=p.aligned,
    prompts_path=snakemake.input.prompts,
    settings=p.settings,
    gen_cfg={"batch_size": p.batch_size},
    keywords=p.keywords,
    out=snakemake.output[0],
)
