//! Load generation for corechat (see perf/README.md).
