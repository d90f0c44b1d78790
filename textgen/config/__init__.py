"""Run configuration: a tree of frozen dataclasses loaded from YAML.

`schema` holds the tree (every key with its default, meaning and check), `coerce` turns
raw YAML values into it, `loading` reads files, stdin and --set overrides, `presets` finds
the configs and corpora that ship in the package, `starter` writes `textgen init`'s config.
Import from here: `from textgen.config import Config, load_config`.
"""

from textgen.config.coerce import INT_LIMITS, config_from_dict, model_config_from_dict
from textgen.config.loading import (MAX_CONFIG_BYTES, STDIN, absolute_path, file_kind, load_config, parse_override,
                                    read_yaml_mapping)
from textgen.config.presets import Preset, list_presets, preset_path
from textgen.config.schema import (ARCHITECTURE_KEYS, CELLS, LEVELS, MODEL_TYPES, MODES, OPTIMIZERS, PRECISIONS,
                                   SCHEDULES, STRATEGIES, UNKNOWN_POLICIES, Config, CorpusConfig, ModelConfig,
                                   OutputConfig, TokenizerConfig, TrainingConfig, ignored_settings, is_text_encoding)

__all__ = ["ARCHITECTURE_KEYS", "CELLS", "Config", "CorpusConfig", "INT_LIMITS", "LEVELS", "MAX_CONFIG_BYTES",
           "MODEL_TYPES", "MODES", "ModelConfig", "OPTIMIZERS", "OutputConfig", "PRECISIONS", "Preset", "SCHEDULES",
           "STDIN", "STRATEGIES", "TokenizerConfig", "TrainingConfig", "UNKNOWN_POLICIES", "absolute_path",
           "config_from_dict", "file_kind", "ignored_settings", "is_text_encoding", "list_presets", "load_config",
           "model_config_from_dict", "parse_override", "preset_path", "read_yaml_mapping"]
