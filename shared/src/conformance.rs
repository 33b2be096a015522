//! The conformance suite every Store/Queue adapter must pass.
