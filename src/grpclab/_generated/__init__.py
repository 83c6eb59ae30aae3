"""Generated from protos/ by grpclab.codegen."""
