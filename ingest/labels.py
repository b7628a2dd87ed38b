"""What the stages share about the labels they compute from a vote histogram (docs/contract.md, "Labels")."""

from common.bounds import Range

# T of p_softmax = softmax(counts / T). At T <= 0 it is undefined; past 100 every target of a few hundred votes is
# all but uniform, so nothing is learnt from it.
SOFTMAX_TEMPERATURE = Range(0.0, 100.0, "softmax(counts / T) is undefined at T <= 0 and flat past 100",
                            lo_open=True)
