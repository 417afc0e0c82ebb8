"""Signal propagation plots (SPPs) for any model in the zoo, or your own.

    from nf_jax import analysis
    x = analysis.gaussian_batch(8, 224)
    r = analysis.signal_propagation("nf_resnet:600", x, activation="relu")
    print(analysis.diagnose(r).line())
    analysis.plot_spp([r], "spp.png")
"""

from nf_jax.analysis.errors import (InputShapeError, ModelOptionError,
                                    NonFiniteStatisticError, SPPError)
from nf_jax.analysis.expected import expected_variance
from nf_jax.analysis.inputs import check_batch, dataset_batch, gaussian_batch
from nf_jax.analysis.plot import plot_spp
from nf_jax.analysis.signal import (SPPResult, model_kwargs, parse_model,
                                    signal_propagation)
from nf_jax.analysis.verdict import Verdict, diagnose, judge
