"""ACT: action chunking with transformers (Zhao et al., RSS 2023)."""
