"""The FSDP2 + torch.compile trainer (installed as ``ila_fast.train``).

* ``trainer``: ``Trainer(cfg, output).fit()``, the whole loop; ``request_save()`` for signals;
* ``distributed``: torchrun variables -> process group; ``parallel``: AC, compile, FSDP2 in one place;
* ``recipe``: AdamW groups and the lr schedule (docs/recipe.md); ``checkpoint``: DCP checkpoints;
* ``monitor``: progress bar, TensorBoard, metrics.jsonl, curves; ``evaluate``: every video scored once;
* ``command``: ``ila-fast train`` / ``ila-fast export``; ``signals``: SIGTERM / SIGINT / SIGUSR2 -> save, then stop.

Importing this package is cheap (nothing heavy at the top), so the CLI can list its commands fast.
"""

__all__ = ["Trainer"]


def __getattr__(name):
    if name == "Trainer":
        from .trainer import Trainer

        return Trainer
    raise AttributeError(name)
