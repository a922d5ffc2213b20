"""`python tests/gcs_emulator.py start ...`: gcp-storage-emulator with the generation header added.

Real GCS answers a media download with `x-goog-generation`; the emulator leaves it out. TensorStore
(through which orbax writes checkpoint arrays) reads an object's generation from that header and
sends it back as the precondition of the next write, so without it a rewrite of an object fails
(`Malformed StorageGeneration`): an OCDBT manifest, say, in a step a killed run had begun. The
download handler is wrapped before the server's route table takes it; all else is the emulator's.
"""

import sys

from gcp_storage_emulator.handlers import objects

_download = objects.download


def _download_with_generation(request, response, storage, *args, **kwargs):
  _download(request, response, storage, *args, **kwargs)
  if response.status.value < 300:
    obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
    response['x-goog-generation'] = str(obj['generation'])
    response['x-goog-metageneration'] = str(obj.get('metageneration', 1))


objects.download = _download_with_generation

if __name__ == '__main__':
  from gcp_storage_emulator import __main__ as emulator  # pylint: disable=g-import-not-at-top
  emulator.main(sys.argv[1:])
