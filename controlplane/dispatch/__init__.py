"""Pure: power dispatch. How much the ASIC fleet may draw (``budget``); the merit order, ramps and
curtailment arrive with the dispatcher (issue 12), a fenced singleton like the scheduler."""
