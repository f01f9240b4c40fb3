"""The study as data: experiment records, the scale files they read, the planner that turns them into a
Makefile of jobs, and the launcher that runs each job locally (one GPU slot) or as a SLURM job.
Torch-free: `make` imports it before anything is trained."""
