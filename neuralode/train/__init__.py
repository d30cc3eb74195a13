"""The shared trainer and what it writes, one concept a module:

- ``trainer``: the training loop (:class:`~neuralode.train.trainer.Trainer`) and ``evaluate``
- ``run``: from a composed config to a trained model; the ``train`` and ``eval`` subcommands
- ``config``: the config schema, ``compose()``, clear errors for bad settings
- ``checkpoint``, ``loggers``, ``memory``, ``seeding``: files, logs, memory figures, randomness

Nothing is imported here, so that the command line can check a config before importing torch.
"""
