"""``var-fast serve``: a page and an HTTP API over one loaded model, built on FastAPI and uvicorn
(``pip install var_fast[serve]``).

- ``requests``: parsing and checking of the API's JSON (the CLI's checks) and of uploaded images;
- ``batcher``: the bounded queue and the worker thread that samples concurrent requests in one batch;
- ``app``: the FastAPI application (routes, streaming, limits); ``static/``: the page.
"""
