"""seml settings for walking-noise on a SLURM cluster with GPUs (seml 0.5).

Copy this file to seml's settings path and edit the partition (and limits) for your cluster:

    mkdir -p ${XDG_CONFIG_HOME:-~/.config}/seml
    cp seml_settings_example.py ${XDG_CONFIG_HOME:-~/.config}/seml/settings.py

seml merges ``SETTINGS`` into its defaults whenever it starts; check what it sees with
``python -c "from seml.settings import SETTINGS; print(SETTINGS.SLURM_DEFAULT)"``, and what a
queued collection would submit with ``seml <collection> print-command``.

What it does: every SLURM job requests ONE GPU and runs 10 experiments on it side by side
(seml starts them as 10 processes in the job). The networks of the paper are small (LeNet5,
3-layer MLPs, a KWS CNN), so one experiment uses a fraction of a modern GPU; ten per GPU
keeps it busy and cuts the queue length tenfold.

Why here and not in the YAMLs: the experiment files in ``experiment_configs/`` carry a
``slurm:`` entry that sets neither ``experiments_per_job`` nor any GPU option, so on a
cluster the values below apply, and on a machine without GPUs (a laptop with a test SLURM,
CI) the same files still submit: ``gres: gpu`` makes ``sbatch`` fail where no GPU exists.
Note that ``experiments_per_job`` from here only applies to YAMLs that HAVE a ``slurm:`` entry
without it: a file with no ``slurm:`` entry gets seml's built-in 1.

Without a GPU (CPU-only cluster): drop ``gres`` and ``partition`` below, or do not install
this file at all (seml's defaults: 1 experiment per job, 1 CPU, 8 GB, 8 h). To send one YAML
to CPU nodes while this file is installed, give its slurm entry (block style: the tag needs
its own line) ::

    slurm:
      - sbatch_options:
          partition: cpu     # your CPU partition
          gres: !remove      # seml's YAML tag: delete the option inherited from here
"""

SETTINGS = {
    "SLURM_DEFAULT": {
        # 10 experiments per SLURM job, all on the job's one GPU
        "experiments_per_job": 10,
        "sbatch_options": {
            "partition": "gpu",      # <- the name of your cluster's GPU partition
            "gres": "gpu:1",         # one GPU per job, shared by its 10 experiments
            "cpus-per-task": 10,     # one core per experiment (data loading, MFCCs for GSC2)
            "mem": "48G",            # ~4 GB per experiment plus headroom
            "time": "1-00:00",       # a YAML's own `time` wins; 300 CIFAR10 epochs fit in a day
        },
    },
    "EXPERIMENT": {
        # ten processes share the job's cores: one thread each instead of ten
        "ENVIRONMENT": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    },
}
