from flask_geneva import step
from flask_geneva.testing import speedrun_workflow
from tests.models import db, geneva


def test_a_workflow_runs_to_the_end(app, user):
    class Greeting(geneva.Workflow):
        @step
        def hello(self):
            self.data["hello"] = True

        @step(wait=60)
        def bye(self):
            self.hero.counter += 1

    wf = Greeting.create(hero=user)
    db.session.commit()
    speedrun_workflow(wf)
    assert wf.state == "finished"
    assert [e.step_name for e in wf.execution_history] == ["hello", "bye"]
    assert wf.data == {"hello": True}
    assert user.counter == 1
