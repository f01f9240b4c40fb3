"""mgkit: model guidance with explanations (Rao et al., ICCV 2023) as composable command-line stages."""

__version__ = "0.1.0"
