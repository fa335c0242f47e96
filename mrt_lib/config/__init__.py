"""Typed configuration: one pydantic model per ``params.yaml`` section (``sections``), the rules
between sections (``params.Params``), the loader (``loader``) and the view of the sections one
stage reads (``stage``).

A bad file fails before any stage writes anything, with exit status 2 and one line per
problem naming the key, the bad value and what is allowed (``load_params_or_exit``).
"""

from mrt_lib.config.data_sources import (
    BuildDatasetConfig,
    ColumnsConfig,
    ContaminationConfig,
    EmbeddedSource,
    FilesSource,
    HFSource,
    HFSplitConfig,
    SourceConfig,
)
from mrt_lib.config.loader import (
    ConfigError,
    format_validation_error,
    load_params,
    load_params_or_exit,
    read_params_file,
    stage_params,
)
from mrt_lib.config.params import Params
from mrt_lib.config.rl import TUNABLE, RlConfig, RoundLink
from mrt_lib.config.sections import (
    BuildStarDataConfig,
    EnvConfig,
    EvaluateConfig,
    GenerationConfig,
    GraderConfig,
    MetaProverConfig,
    ModelConfig,
    PolicyConfig,
    ResourcesConfig,
    RetrainConfig,
    RuntimeConfig,
    Section,
    SftWarmstartConfig,
    Split,
    StageResources,
    SynthesizeBacktracksConfig,
    TemplateConfig,
    TrainBaseConfig,
)
from mrt_lib.config.stage import StageConfig, for_stage

__all__ = [
    "ConfigError", "format_validation_error", "load_params", "load_params_or_exit", "read_params_file",
    "stage_params", "Params", "Section", "EnvConfig", "RuntimeConfig", "GenerationConfig", "ColumnsConfig",
    "EmbeddedSource", "HFSplitConfig", "HFSource", "FilesSource", "SourceConfig", "ContaminationConfig",
    "BuildDatasetConfig", "TemplateConfig", "GraderConfig", "MetaProverConfig", "PolicyConfig", "RetrainConfig",
    "ResourcesConfig", "StageResources",
    "ModelConfig",
    "TrainBaseConfig", "EvaluateConfig", "SynthesizeBacktracksConfig", "SftWarmstartConfig",
    "BuildStarDataConfig", "RoundLink", "RlConfig", "TUNABLE", "Split", "StageConfig", "for_stage",
]
