"""Networks f, g and h, the gradient reversal layer, and K-wide packed networks."""
