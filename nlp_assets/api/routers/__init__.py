"""The API's routes, one router per concern: health (and the docs), documents, results,
backfills. `nlp_assets.api.app.create_app` includes them."""
