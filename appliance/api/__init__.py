"""The appliance HTTP API: OpenAI-compatible generation, sign-in, administration, audit, health, metrics.

Public surface (import from the modules; this package imports nothing so ``enclave init`` stays light)::

    appliance.api.app.create_app(*, settings, uow, audit_log, engine, clock=None) -> FastAPI
    appliance.api.app.set_engine(app, engine | None)          # once a model has loaded (or to unload)
    appliance.api.runtime.open_runtime(settings, *, require_model=False) -> Runtime   # serve/demo wiring
    appliance.api.runtime.load_engine(settings) -> AsyncEngine                        # verified bundle
    appliance.api.server.bind(host, port, *, tls, insecure_http) -> Listener
    appliance.api.server.serve(app, listener, *, on_listening=None)                   # async, until signalled
    appliance.api.server.run_in_thread(app, listener) -> ContextManager[url]          # tests, benchmarks
    appliance.api.tls.create_tls(tls_dir, *, now, hosts=()) / ca_fingerprint(ca_pem) / init_tls(settings)

Modules: ``errors`` (OpenAI error envelope and status mapping), ``generation`` (audited admission and
streaming of one generation), ``quotas`` (per-caller policy limits), ``auditing`` (Caller, Auditor),
``metrics`` (Prometheus text), ``middleware`` (request id, 413, request counts), ``sse``, ``state``
(dependencies and the permission check), ``routes/`` (one module per route family). Request and
response models both sides use are in :mod:`shared.schemas`.
"""
