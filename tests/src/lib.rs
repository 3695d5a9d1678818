//! End-to-end test support: a real OTLP/gRPC receiver and a harness that
//! runs the real `taskman-server` binary.
