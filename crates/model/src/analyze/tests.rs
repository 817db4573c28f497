//! Table tests: one case per analyzer code.
