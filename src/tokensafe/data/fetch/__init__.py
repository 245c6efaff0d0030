"""Fetch every data file a preset reads: ``python -m tokensafe.data.fetch PRESET [--dest DIR] [--force] [--list]``.

PRESET is a name (config/presets/<name>.yaml) or a path. Every active ``data.<role>.path`` of the preset (``--all``:
also the commented-out alternatives) is produced by a catalogue entry (:mod:`tokensafe.data.fetch.catalog`) under DIR
(default: the current directory) at the same relative path. Each file written is recorded in
``DIR/data/SOURCES.lock.json``: its upstream source and the commit it was read at, the sha256 of the upstream file
and of the written file, its rows, the preparation and the license. A file whose lock record still matches (same
sha256, same revision, same inputs) is not fetched again; ``--force`` fetches it anyway, ``--update`` moves the
revisions that the catalogue does not pin to what upstream serves now.

Transport: GitHub files over HTTPS at the pinned commit (base URLs: TOKENSAFE_GITHUB_RAW, TOKENSAFE_GITHUB_API);
hub files through huggingface_hub, which reads HF_ENDPOINT, HF_HUB_CACHE and HF_TOKEN. A gated set the hub refuses
is reported with the steps to get access, the other files are still fetched, and the command exits non-zero
listing what is missing. Models are not downloaded here (the jobs load them); the gated ones the preset names
are listed with the same steps.
"""


# Modules: upstream (what an entry is), derive (how derived files are built), catalog (the entries),
# transport (GitHub / hub downloads), lockfile (checksums and data/SOURCES.lock.json), cli (the command).
