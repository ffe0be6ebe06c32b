"""A study as one object: its settings and the folder its artifacts live in.

Every stage needs both the study file's settings (datasets, labels, recipe, seeds) and the folder that holds its
manifest, caches and runs. Passed as two arguments they were two sources of truth: nothing stopped a caller from
pairing one study's settings with another study's folder, or a folder that disagreed with ``config.out``. A
:class:`Study` is made once, by the command that starts the work, and every stage takes it:

- :meth:`Study.load` reads a study file; the folder is its ``out``.
- :meth:`Study.open` reads the ``config.yaml`` an earlier ``prepare`` saved in a study folder; the folder is the one
  opened, so a study folder that was moved or copied is reported where it now is (and its runs resume there:
  a run's fingerprint holds no paths).

Deliberately free of torch and Lightning, like :mod:`cxrgen.study.layout`: ``cxrgen status`` opens a study without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from cxrgen.errors import validation_errors
from cxrgen.study.config import ConfigError, StudyConfig, load_study, read_yaml
from cxrgen.study.layout import RunDir, StudyDir


@dataclass(frozen=True)
class Study:
    """A study's settings (``config``) and its folder (``dir``), which names every artifact's path."""

    config: StudyConfig
    dir: StudyDir

    @classmethod
    def of(cls, config: StudyConfig) -> Study:
        """The study of a validated config, in its ``out`` folder."""
        return cls(config, StudyDir(config.out))

    @classmethod
    def load(cls, study_file: str | Path) -> Study:
        """Read and validate a study file (see :func:`cxrgen.study.config.load_study`)."""
        return cls.of(load_study(study_file))

    @classmethod
    def open(cls, folder: str | Path) -> Study:
        """The study saved in ``folder/config.yaml`` by ``prepare`` (absolute paths, every default filled in).

        Raises:
            ConfigError: the file is missing or does not validate; the message names it.
        """
        layout = StudyDir(Path(folder))
        if not layout.config.is_file():
            raise ConfigError(
                f"{folder}: no config.yaml; is it a study directory (a study file's out, made by `cxrgen prepare`)?"
            )
        try:
            config = StudyConfig.model_validate(read_yaml(layout.config))
        except ValidationError as exc:
            raise ConfigError(f"{layout.config}: {validation_errors(exc)}") from exc
        return cls(config, layout)

    @property
    def seeds(self) -> list[int]:
        """The training seeds; each is a run of its own."""
        return self.config.train.seed_list()

    def seed(self, seed: int | None = None) -> int:
        """One of ``train.seeds``; None is the first.

        Raises:
            ConfigError: ``seed`` is not one of ``train.seeds``.
        """
        seeds = self.seeds
        if seed is not None and seed not in seeds:
            raise ConfigError(f"seed {seed} is not one of train.seeds {seeds}")
        return seeds[0] if seed is None else seed

    def run(self, configuration: str, arch: str, seed: int | None = None) -> RunDir:
        """The run folder of one (configuration, arch, seed): ``runs/<configuration>/<arch>`` with one seed,
        ``.../<arch>/seed-<N>`` with several. ``seed`` as in :meth:`seed`.
        """
        chosen = self.seed(seed)
        return self.dir.run(configuration, arch, chosen if len(self.seeds) > 1 else None)
