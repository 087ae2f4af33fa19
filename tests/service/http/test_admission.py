"""Admission slots shared by API-server processes, and the slots of one that dies given back."""

from __future__ import annotations

import multiprocessing as mp
import os

from service.http.admission import Admission


def test_slots_are_taken_up_to_the_limit_and_given_back() -> None:
    admission = Admission(queue_limit=3, api_servers=1)
    admission.claim()
    assert [admission.take() for _ in range(4)] == [True, True, True, False]
    assert admission.in_flight() == 3 and admission.api_servers() == 1
    admission.give_back()
    assert admission.in_flight() == 2 and admission.take()


def test_the_slots_of_an_api_server_that_died_holding_them_come_back() -> None:
    admission = Admission(queue_limit=8, api_servers=2)
    admission.claim()
    assert admission.take()  # this process holds one

    def api_server_that_dies() -> None:
        admission.claim()
        for _ in range(3):
            admission.take()
        os._exit(1)  # dies holding them

    child = mp.get_context("fork").Process(target=api_server_that_dies)
    child.start()
    child.join(10)
    assert admission.in_flight() == 4 and admission.api_servers() == 1  # the dead one is not counted
    assert admission.reclaim(child.pid or 0) == 3
    assert admission.in_flight() == 1
    assert admission.reclaim(child.pid or 0) == 0  # once only
    replacement = mp.get_context("fork").Process(target=admission.claim)  # its entry is free again
    replacement.start()
    replacement.join(10)
    assert replacement.exitcode == 0
