"""The search core: the per-problem tree, the one search loop, the scheduler, the searcher,
and the two interfaces it drives (`Strategy` / `Expand`, `Policy` / `Verifier`)."""
