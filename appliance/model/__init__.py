"""DeepSeek-V4 checkpoint -> ONNX graphs -> signed Enclave model bundle.

Public surface (import from the submodules):

    checkpoint.open_checkpoint(path) -> Checkpoint
        .config (V4Config), .names(), .tensor(name) (float32, dequantized; int64 for the hash
        table; transformers' state_dict names), .expert(name, e) (one expert of a stacked experts
        tensor, read alone), .shape(name), .stored_bytes(name), .tokenizer_path, .layout.
        Reads DeepSeek's release layout (FP8 e4m3 block scales, FP4 experts, per-expert tensors)
        and save_pretrained / state_dict layouts; validates everything on open.
    graph.build_graphs(ckpt, *, dtype, quant, stages, moe, weight_sink) -> list[onnx.ModelProto]
    graph.graph_io(config, ...) -> the I/O contract stored in bundle.json (see docs/bundle.md)
    bundle.build_bundle(checkpoint_dir, out_dir, *, dtype, quant, stages, moe, signing_key, name,
                        version, progress) -> Path
        Writes into a temporary directory renamed at the end: an interrupted or failed build
        leaves no half bundle. Weights go to ``model.onnx.data`` (one stage) or one file per stage
        (``stage0.onnx.data``, ``stage1.onnx.data``, ...) as the graph builder makes them.
    bundle.load_bundle(path, *, trusted_keys) -> Bundle
        The only way to open a bundle for use: the manifest signature must verify against one of
        ``trusted_keys`` (Ed25519 public keys; see ``signing.trusted_keys(data_dir)``) and every
        file must match its sha256 and size, else IntegrityError. Bundle has .path, .info
        (bundle.json), .config (V4Config), .graph_paths (one per stage, in order),
        .tokenizer_path, .io (docs/bundle.md's ``io`` object), .name, .version, .manifest.
    store.import_bundle(bundle_dir, data_dir, *, before_install=None) -> Bundle
        Install under <data>/models/<name>/<version> (verified twice: source and copy), refusing
        a version not newer than the installed one (rollback), then swap <data>/models/active.json.
    store.list_models(data_dir), store.active_bundle_path(data_dir, name="")
    signing.default_signing_key(), signing.trusted_keys(data_dir), signing.pin_public_key(...),
    signing.init_model_trust(settings) (the ``enclave init`` step)
    quant.quantize_blocks / quantize_experts / dequantize: MatMulNBits and QMoE layouts
    demo.build_demo(out_dir, *, signing_key) -> DemoPaths(checkpoint, bundle): the shipped trained
        demo model (demo_model/, docs/demo-model.md); demo_data: its corpus and sample formats

Errors: ModelError (unusable checkpoint, bundle or graph; names the tensor or key),
IntegrityError (manifest, digest or signature does not verify), both from shared.errors.
"""
