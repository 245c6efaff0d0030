from tokensafe.runtime.logs import setup

setup(snakemake.log[0])  # before the imports: its start-up GC pause (tokensafe.runtime.logs) covers them

from tokensafe.methods.pact.safety_tokens import write_safety_tokens

p = snakemake.params
write_safety_tokens(
    aligned=p.aligned,
    base=p.base,
    responses_path=snakemake.input.responses,
    settings=p.settings,
    out=snakemake.output[0],
)
