# offline_models.py  (seed 002, as written; the label names this test app's CRF)

from syncrouter.compat import OfflineModel, site_offline_models

offline_models = [
    'testapp.OfflineCrf',
]

site_offline_models.register(offline_models, OfflineModel)
