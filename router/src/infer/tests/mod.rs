//! In-process tests of the inference service.
