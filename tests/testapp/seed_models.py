"""The model code of the seed READMEs, as written: only the imports differ.

``MaternalCrfModel`` is edc-sync's example (seeds 000 and 001), ``CrfModel``
django-offline's (seed 002). Both are abstract, as in the seeds; the concrete
models at the end are this test app's CRFs built on them.
"""
from syncrouter.models import SyncModelMixin
from tests.testapp import django1_models as models
from tests.testapp.edc import (
    BaseUuidModel,
    CrfMetaDataManager,
    CrfModelManager,
    CrfModelMixin,
    HistoricalRecords,
    HistoricalRecords as AuditTrail,
    MaternalConsent,
    OffStudyMixin,
    RequiresConsentMixin,
)
from tests.testapp.models import SubjectVisit as MaternalVisit, SubjectVisit as Visit

# --- seeds 000 and 001 (edc-sync) -----------------------------------------------

class MaternalCrfModel(CrfModelMixin, SyncModelMixin, OffStudyMixin,
                                  RequiresConsentMixin, BaseUuidModel):

    consent_model = MaternalConsent

    off_study_model = ('mb_maternal', 'MaternalOffStudy')

    maternal_visit = models.OneToOneField(MaternalVisit)

    history = AuditTrail()

    entry_meta_data_manager = CrfMetaDataManager(MaternalVisit)

    def natural_key(self):
        return (self.maternal_visit.natural_key(), )
    natural_key.dependencies = ['mb_maternal.maternal_visit']

    def __unicode__(self):
        return unicode(self.get_visit())  # noqa: F821 (Python 2, never called)

    class Meta:
        abstract = True


# --- seed 002 (django-offline) --------------------------------------------------

class CrfModel(BaseUuidModel):

    visit = models.OneToOneField(Visit)

    objects = CrfModelManager()

    history = HistoricalRecords()

    def natural_key(self):
        return (self.visit.natural_key(), )
    natural_key.dependencies = ['myapp.visit']

    class Meta:
        abstract = True


# --- this test app's concrete CRFs ----------------------------------------------

class MaternalCrf(MaternalCrfModel):
    """Registered as a ``SyncModelMixin`` model, with its history."""

    weight_kg = models.DecimalField(max_digits=5, decimal_places=1, null=True)


class OfflineCrf(CrfModel):
    """Registered by ``offline_models.py`` (seed 002), with its history."""

    outcome = models.CharField(max_length=10, default="well")
    visit_date = models.DateField(null=True)
