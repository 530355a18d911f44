"""epd-operator: turns one EPDCluster into a vLLM encoder / prefill / decode serving cluster."""

# The release version: the one literal. Both pyprojects read their distribution's copy
# (operator/ and connector/ are released in lockstep: a unit test keeps
# epd_connector.__version__, Chart.yaml's version/appVersion and the default image tags equal).
__version__ = "0.1.0"
