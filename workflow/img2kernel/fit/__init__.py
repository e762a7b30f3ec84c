"""Fitting models to (input, output) pairs: closed-form least squares (:mod:`.lstsq`) and the
pairs fit that finds size, channels, border and noise floor (:mod:`.pairs`)."""
