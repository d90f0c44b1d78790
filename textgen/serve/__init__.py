"""`textgen serve`: an HTTP API over one loaded model, whose concurrent requests run as one batch.

`engine` batches requests through the compiled generation loop, `body` reads and checks a request's
JSON, `app` is the Starlette application (routes, limits, the bearer token, Server-Sent Events) and
`server` runs it under uvicorn until a stop signal, draining what is in flight. Starlette and uvicorn
are the optional `serve` extra (`pip install textgen[serve]`); nothing here is imported by `import textgen`.
"""
