//! Generator (being written).
