"""trainspec's NumPy reference: the executable statement of the spec.

Pure NumPy and the standard library; no framework is imported here. Every
function computes in float64 from exactly the values a framework receives.
"""
