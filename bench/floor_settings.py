"""Settings of the web process that ``bench/web_ratio.py --floor`` measures: the test settings
(``tests.settings``, as every benchmark's web process) with ``bench/floor_urls.py`` as the URL
configuration, which adds the floor probes to the product's URLs. Never used outside the bench."""

from tests.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor_urls"
