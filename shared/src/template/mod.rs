//! Template rendering and safe expressions (DESIGN.md §4).
