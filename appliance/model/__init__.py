"""DeepSeek-V4 checkpoint -> ONNX graphs -> signed Enclave model bundle.

Public surface (import from the submodules):

    checkpoint.open_checkpoint(path) -> Checkpoint
        .config (V4Config), .names(), .tensor(name) (float32, dequantized; transformers' state_dict
        names), .expert(name, e) (one expert of a stacked experts tensor), .tokenizer_path.
        Reads DeepSeek's release layout (FP8/FP4, per-expert tensors) and save_pretrained layouts.
    graph.build_graphs(ckpt, *, dtype, quant, stages, moe) -> list[onnx.ModelProto]
    graph.graph_io(config, ...) -> the I/O contract stored in bundle.json (see docs/bundle.md)
    bundle.build_bundle(checkpoint_dir, out_dir, *, dtype, quant, stages, moe, signing_key, progress)
        -> Path. Writes into a temporary directory renamed at the end: an interrupted build leaves
        no half bundle.
    bundle.load_bundle(path, *, trusted_keys) -> Bundle
        The only way the engine opens a bundle: the manifest signature must verify against one of
        ``trusted_keys`` (Ed25519 public keys; see ``signing.trusted_keys(data_dir)``) and every file
        must match its sha256 and size, else IntegrityError. Bundle has .path, .info (bundle.json),
        .config (V4Config), .graph_paths (one per stage, in order), .tokenizer_path, .io
        (docs/bundle.md's ``io`` object), .name, .version.
    store.import_bundle(bundle_dir, data_dir) / store.list_models(data_dir) / store.active_bundle_path(data_dir)
        Install under <data>/models (verified, refusing rollback), list, and find the active model.
    signing: default_signing_key(), trusted_keys(data_dir), pin_public_key(data_dir, key, name).

Errors: ModelError (unusable checkpoint, bundle or graph; names the tensor or key),
IntegrityError (manifest, digest or signature does not verify), both from shared.errors.
"""
