//! (placeholder, replaced in a following commit)
