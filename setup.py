from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="syncrouter",
    version="0.1.0",
    description="Django database router and multi-database replication for offline-first "
                "data collection",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    packages=find_packages(include=["syncrouter", "syncrouter.*"]),
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=["Django>=5.2,<6.2", "sqlparse>=0.5", "orjson>=3.9", "cryptography>=42"],
    extras_require={
        "postgres": ["psycopg[binary]>=3.1"],
        "tenants": ["django-db-multitenant>=0.3.2"],
        "test": ["pytest>=8", "pytest-django>=4.9", "psycopg[binary]>=3.1", "hypothesis>=6.100",
                 "django-simple-history>=3.5"],
    },
    classifiers=[
        "Framework :: Django",
        "Framework :: Django :: 5.2",
        "Framework :: Django :: 6.0",
        "Framework :: Django :: 6.1",
        "Programming Language :: Python :: 3",
    ],
)
