//! The placement controller (placeholder).
