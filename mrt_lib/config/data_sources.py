"""The ``build_dataset`` section: where problems come from (embedded, hf, files), column
mappings, contamination checks."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, field_validator, model_validator

from mrt_lib.config.sections import Section, Split


class ColumnsConfig(Section):
    """Which source columns hold the problem, its answer and its id (hf and files sources)."""

    problem: str = Field("problem", min_length=1, description="problem statement column")
    answer: str | None = Field("answer", description="reference answer column; null: take it from `solution`")
    solution: str | None = Field(None, description="worked solution column: its last \\boxed{} is the answer "
                                 "where the answer column is absent or empty")
    id: str | None = Field(None, description="id column (unique); null: ids from a hash of the problem text")

    @model_validator(mode="after")
    def _some_answer(self) -> "ColumnsConfig":
        if self.answer is None and self.solution is None:
            raise ValueError("set columns.answer or columns.solution: the reference answer must come from somewhere")
        return self


class EmbeddedSource(Section):
    """The embedded code-search problems, generated here (the default)."""

    kind: Literal["embedded"] = "embedded"

    def dataset_names(self) -> list[str]:
        """Datasets the source reads by name (hub ids or folders): none, the problems are generated."""
        return []

    def inputs(self) -> list[tuple[str, str | None]]:
        """What the source reads, as (path or hub id, revision): nothing, the problems are generated."""
        return []


class HFSplitConfig(Section):
    """One of our splits from a Hugging Face dataset split; unset fields fall back to the source's."""

    split: str = Field(min_length=1, description="the dataset's split (hub split expressions like train[:500] work)")
    dataset: str | None = Field(None, description="hub id or save_to_disk folder; null: the source's dataset")
    config_name: str | None = None
    revision: str | None = None
    columns: ColumnsConfig | None = Field(None, description="null: the source's columns")


class HFSource(Section):
    """Hugging Face datasets: a hub id (read with ``datasets.load_dataset``) or a folder written
    by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with ``load_from_disk``).
    Each of our splits names a split of ``dataset``, or its own dataset (train on one set,
    test on MATH-500)."""

    kind: Literal["hf"]
    dataset: str | None = Field(None, description="hub id (e.g. HuggingFaceH4/MATH-500) or a save_to_disk folder; "
                                "the default of every split")
    config_name: str | None = Field(None, description="the dataset's configuration (hub only)")
    revision: str | None = Field(None, description="hub revision (commit) to pin; recommended")
    splits: dict[Split, Union[str, HFSplitConfig]] = Field(
        description="our split -> the dataset's split name, or {split, dataset, config_name, revision, columns}; "
        "train and test needed, val optional (else cut from train)")
    columns: ColumnsConfig = ColumnsConfig()

    @field_validator("splits")
    @classmethod
    def _train_and_test(cls, v: dict) -> dict:
        return _need_train_and_test(v)

    @model_validator(mode="after")
    def _every_split_has_a_dataset(self) -> "HFSource":
        orphans = [k for k in ("train", "val", "test") if k in self.splits and not self.dataset
                   and (isinstance(self.splits[k], str) or self.splits[k].dataset is None)]
        if orphans:
            raise ValueError(f"splits {orphans} name no dataset: set build_dataset.source.dataset or theirs")
        return self

    def split_config(self, split: str) -> HFSplitConfig:
        """Our ``split`` with every field resolved."""
        value = self.splits[split]
        spec = HFSplitConfig(split=value) if isinstance(value, str) else value
        return HFSplitConfig(split=spec.split, dataset=spec.dataset or self.dataset,
                             config_name=spec.config_name if spec.dataset else self.config_name,
                             revision=spec.revision if spec.dataset else self.revision,
                             columns=spec.columns or self.columns)

    def columns_for(self, split: str) -> ColumnsConfig:
        return self.split_config(split).columns

    def dataset_names(self) -> list[str]:
        """Every dataset a split reads (a hub id or a save_to_disk folder)."""
        return sorted({self.split_config(split).dataset for split in self.splits})

    def inputs(self) -> list[tuple[str, str | None]]:
        """What the source reads, as (hub id or folder, revision), one per split."""
        return [(c.dataset, c.revision) for c in (self.split_config(split) for split in sorted(self.splits))]


class FilesSource(Section):
    """Local files: JSON Lines (.jsonl) or Parquet (.parquet), one or more per split."""

    kind: Literal["files"]

    def dataset_names(self) -> list[str]:
        """Local files only: nothing is read from the hub."""
        return []

    def inputs(self) -> list[tuple[str, str | None]]:
        """What the source reads: every file of every split (no revision)."""
        return [(name, None) for split in sorted(self.files) for name in self.files[split]]
    files: dict[Split, list[str]] = Field(description="our split -> paths (relative to the working directory); "
                                          "train and test needed, val optional (else cut from train)")
    columns: ColumnsConfig = ColumnsConfig()

    def columns_for(self, split: str) -> ColumnsConfig:
        return self.columns

    @field_validator("files")
    @classmethod
    def _known_formats(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        _need_train_and_test(v)
        for split, paths in v.items():
            if not paths:
                raise ValueError(f"files.{split} lists no file")
            bad = [p for p in paths if not p.endswith((".jsonl", ".parquet"))]
            if bad:
                raise ValueError(f"files.{split}: {bad} are neither .jsonl nor .parquet")
        return v


def _need_train_and_test(v: dict) -> dict:
    missing = [s for s in ("train", "test") if s not in v]
    if missing:
        raise ValueError(f"missing split(s) {missing}: train and test are needed (val is cut from train if absent)")
    return v


SourceConfig = Annotated[Union[EmbeddedSource, HFSource, FilesSource], Field(discriminator="kind")]


class ContaminationConfig(Section):
    """Train/eval contamination checks (hf and files sources): exact match after normalisation,
    and word n-gram overlap."""

    ngram: int = Field(8, ge=1, description="n of the word n-grams")
    threshold: float = Field(0.5, gt=0, le=1, description="share of an eval problem's n-grams found in one "
                             "training problem that counts as contamination")
    action: Literal["drop", "report", "fail"] = Field(
        "drop", description="drop: remove the contaminated problem from the earlier split (train before val "
        "before test); report: keep it; fail: stop the stage. Always reported in meta.json")


class BuildDatasetConfig(Section):
    seed: int = Field(0, description="shuffles the problems before splitting")
    val_fraction: float = Field(0.125, gt=0, lt=1, description="embedded; hf/files: share of train cut for val "
                                "when the source has no val split")
    test_fraction: float = Field(0.125, gt=0, lt=1, description="embedded only (hf/files name their test split)")
    source: SourceConfig = Field(EmbeddedSource(), description="embedded | hf | files")
    max_bad_share: float = Field(0.05, ge=0, le=1, description="hf/files: fail when more rows than this share "
                                 "have a missing or unparseable problem or answer")
    contamination: ContaminationConfig = ContaminationConfig()
    max_problem_chars: int = Field(20_000, ge=1, description="hf/files: a longer problem is a bad row (too_long)")
    max_answer_chars: int = Field(500, ge=1, description="hf/files: a longer answer is a bad row (too_long)")
    max_rows: dict[Split, int] = Field({}, description="hf/files: keep at most this many rows of a split "
                                       "(a seeded sample, after cleaning)")

    @model_validator(mode="after")
    def _train_left(self) -> "BuildDatasetConfig":
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ValueError("val_fraction + test_fraction must stay below 0.9 to leave training problems")
        if any(n < 1 for n in self.max_rows.values()):
            raise ValueError(f"max_rows must be positive, got {self.max_rows}")
        return self
