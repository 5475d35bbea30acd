"""The recommendation explorer: pages inside the Airflow UI that show one night's run, a user's
list, an item's neighbours and a model's training, read from the lake and, as the read-only role
`recsys_reader`, from the recommendation store's views.

`app.create_app` builds the FastAPI app; `plugins/recsys_explorer.py` registers it with Airflow.
"""
