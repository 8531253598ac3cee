"""Installs medssl from settings.ini (the nbdev 2.4 layout).

torch/torchvision are declared as open ranges so that an already installed build
(e.g. `pip install torch==2.14.1 torchvision==0.29.1` from local wheels) satisfies
them and nothing is downloaded.
"""
from configparser import ConfigParser
import setuptools

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()
lic = licenses[cfg['license']]
min_python = cfg['min_python']

requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
xrv_requirements = cfg.get('xrv_requirements', '').split()   # optional: real label tables, lung masks and reports (medssl.xrv)
dicom_requirements = cfg.get('dicom_requirements', '').split()   # optional: decoders of compressed DICOMs (JPEG 2000, JPEG-LS)
hf_requirements = cfg.get('hf_requirements', '').split()   # optional: a local Hugging Face text encoder (CXR-BERT, medssl.text)
console_scripts = cfg.get('console_scripts', '').split()

setuptools.setup(
    name=cfg['lib_name'],
    license=lic[0],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'License :: ' + lic[1],
                 'Natural Language :: ' + cfg['language'].title()]
                + ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['medssl', 'medssl.*']),
    include_package_data=True,
    package_data={'medssl': ['data/*.csv', 'data/*/*.csv', 'data/*/*.md', 'data/*/*.pt', 'data/*/*.json']},
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'xrv': xrv_requirements, 'dicom': dicom_requirements, 'hf': hf_requirements},
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    entry_points={'console_scripts': console_scripts, 'nbdev': [f'{cfg["lib_path"]}={cfg["lib_path"]}._modidx:d']},
    version=cfg['version'],
    author=cfg['author'], author_email=cfg['author_email'],
    description=cfg['description'], keywords=cfg['keywords'],
)
