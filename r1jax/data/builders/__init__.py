"""tfds builders of the r1jax datasets (importing this package registers them with tfds).

| load_source name | tfds name / config          | splits       | source      |
|------------------|-----------------------------|--------------|-------------|
| gsm8k            | r1jax_gsm8k                 | train, test  | "gsm8k"     |
| math             | r1jax_math/full             | train, test  | "math"      |
| math500          | r1jax_math/math500          | test         | "math"      |
| aime2024         | r1jax_aime/2024             | test         | "aime"      |
| aime2025         | r1jax_aime/2025             | test         | "aime"      |
| countdown        | r1jax_countdown/<params>    | train, test  | "countdown" |
"""

from r1jax.data.builders.aime import R1jaxAime
from r1jax.data.builders.countdown import CountdownConfig, R1jaxCountdown, countdown_config
from r1jax.data.builders.gsm8k import R1jaxGsm8k
from r1jax.data.builders.hendrycks_math import R1jaxMath

# load_source name -> (tfds name, config name or None, default split)
BUILDERS: dict[str, tuple[str, str | None, str]] = {
    "gsm8k": (R1jaxGsm8k.name, None, "train"),
    "math": (R1jaxMath.name, "full", "train"),
    "math500": (R1jaxMath.name, "math500", "test"),
    "aime2024": (R1jaxAime.name, "2024", "test"),
    "aime2025": (R1jaxAime.name, "2025", "test"),
    "countdown": (R1jaxCountdown.name, None, "train"),
}

__all__ = [
    "BUILDERS",
    "CountdownConfig",
    "R1jaxAime",
    "R1jaxCountdown",
    "R1jaxGsm8k",
    "R1jaxMath",
    "countdown_config",
]
